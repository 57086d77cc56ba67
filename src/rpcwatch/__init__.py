"""rpcwatch: find RPC reached from the internet in the logs defenders already have."""
__version__ = "0.1.0"
