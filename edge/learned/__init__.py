"""The learned eviction policy's model: the feature schema, the dueling Q-network, its ONNX
export and serving, and its offline trainer (see ``network`` for the one definition of both)."""
