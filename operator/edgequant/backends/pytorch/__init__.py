"""PyTorch backend: torch-qat on torch.export programs (.pt2) with PT2E (torchao), exported to ONNX Q/DQ and scored by ONNX Runtime.

torch and torchao are imported only inside these modules' functions. See docs/torch-qat.md.
"""
