"""planexec executor service: runs validated plans durably against tool adapters."""
