"""The TFLite network files of an export, made ready for one input size.

export.py converts the network with a bilinear resize in front of it, whose output size is
a second input, ``size`` ([2] int32, height and width, multiples of 32). XNNPACK runs a
resize only when its size is a constant of the model, so before an interpreter is planned,
``for_size`` writes a copy of the file in which that input is a constant: a pass at 1.5x then
resizes inside the network, in int8 for network_int8.tflite, instead of in TensorFlow before
it and copying the 2.25x larger image in (on 640x480 photos 7.9 ms a 1.5x pass against 10.4;
MODEL_CARD.md). ``for_size(None)`` cuts the resize out, for inputs that are the network's
size already (a 1x pass). Files without the size input (exports before it) pass through as
they are, with ``resizes`` False.

Making a copy takes about 25 ms, once per input size (model/runtime.py keeps an interpreter
per size).
"""

import numpy as np

_RESIZE_BILINEAR = 23  # tflite schema.fbs BuiltinOperator
_INT32 = 2             # tflite schema.fbs TensorType
# Input sides the network takes: multiples of its largest stride (32 in every stride set
# model/detector.py supports). model/serving.py, runtime.py and multiscale.py take it from here.
MULTIPLE = 32


class Network:
    """A network file (bytes) that may take its resize size as an input."""

    def __init__(self, model_bytes, source='network'):
        self._bytes, self._source = bytes(model_bytes), source
        model = self._parse()
        graph = model.subgraphs[0]
        sizes = [i for i in graph.inputs
                 if graph.tensors[i].type == _INT32 and list(graph.tensors[i].shape) == [2]]
        self.resizes = bool(sizes)
        if not self.resizes:
            return
        self._size_tensor = int(sizes[0])
        resizes = [k for k, op in enumerate(graph.operators)
                   if _code(model, op) == _RESIZE_BILINEAR and op.inputs[1] == self._size_tensor]
        if len(resizes) != 1:
            raise ValueError(f'{source}: its size input feeds {len(resizes)} resize ops, '
                             'not one; export the model again with export.py')
        self._resize_op = resizes[0]

    def for_size(self, size=None):
        """Model bytes whose only input is the image: resized inside to `size` (height,
        width; multiples of 32), or with the resize cut out when size is None."""
        if not self.resizes:
            if size is not None:
                raise ValueError(f'{self._source} has no resize inside; export the model '
                                 'again with export.py')
            return self._bytes
        from tensorflow.lite.python import schema_py_generated as schema
        from tensorflow.lite.tools import flatbuffer_utils
        model = self._parse()
        graph = model.subgraphs[0]
        buffer = schema.BufferT()
        if size is None:  # the resize's input goes where its output went
            op = graph.operators.pop(self._resize_op)
            image, resized = int(op.inputs[0]), int(op.outputs[0])
            for other in graph.operators:
                other.inputs = np.where(other.inputs == resized, image, other.inputs)
            graph.outputs = np.where(graph.outputs == resized, image, graph.outputs)
            size = (0, 0)  # the size tensor stays in the file, unused
        else:
            height, width = (int(v) for v in size)
            if height < MULTIPLE or width < MULTIPLE or height % MULTIPLE or width % MULTIPLE:
                raise ValueError(f'{self._source}: the network takes sizes that are multiples '
                                 f'of {MULTIPLE}, got {height}x{width}')
        buffer.data = np.asarray(size, '<i4').view(np.uint8)
        model.buffers.append(buffer)
        graph.tensors[self._size_tensor].buffer = len(model.buffers) - 1
        graph.inputs = graph.inputs[graph.inputs != self._size_tensor]
        for signature in model.signatureDefs or []:
            signature.inputs = [t for t in signature.inputs
                                if t.tensorIndex != self._size_tensor]
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))

    def _parse(self):
        from tensorflow.lite.tools import flatbuffer_utils
        try:
            model = flatbuffer_utils.convert_bytearray_to_object(bytearray(self._bytes))
            problem = None if model.subgraphs else 'no subgraph'
        except Exception as e:  # flatbuffers raises bare struct/index errors on bad files
            problem = e
        if problem is not None:
            raise ValueError(f'{self._source} is not a TFLite model ({problem})')
        return model


def _code(model, op):
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)
