"""The notebook course around the library: notebook setup, exercises, student copies, the notebook runner, slides."""
