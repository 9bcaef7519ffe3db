"""pytest settings for the suite."""


def pytest_collection_modifyitems(items):
    """Leaves out tf.test.TestCase.test_session, a context manager pytest collects as a test
    of every TestCase (and reports as one skip each: "Not a test")."""
    items[:] = [item for item in items if item.name != 'test_session']
