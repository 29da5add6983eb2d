"""Low-cost customization with a global expert, a local expert and a gating network.

Zhang, Davoodi & Hu, "A Mixture of Expert Approach for Low-Cost Customization of Deep Neural
Networks", arXiv:1811.00056. A frozen LeNet5 global expert (GE) is deployed; on the device a small
local expert (LE) and a gating network (GN) are trained on one user's few samples; GN sends each
input to GE or LE.
"""
