"""The MSE Health Monitor (node agent): installs alone as the mse-node-agent distribution."""

# The release of both distributions built from this tree (mse-node-agent and mseportal,
# which pins this one); the wire's own version is protocol.PROTOCOL_VERSION.
__version__ = "0.1.0"
