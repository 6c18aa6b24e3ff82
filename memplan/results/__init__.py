"""What memplan answers: pydantic result models. The table, the JSON and the Python API are views of these."""
