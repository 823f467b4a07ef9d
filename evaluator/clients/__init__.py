"""The driver's clients of outside services (S3, W&B), shared by the sources, the outputs and the service."""
