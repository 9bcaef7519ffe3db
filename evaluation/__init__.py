"""Detection accuracy: WIDER FACE protocol (wider), ground truth loading (labels), PR plots."""
