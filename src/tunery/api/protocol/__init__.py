"""Every wire object of the API as a pydantic v2 model, one module per resource.

These mirror the schemas of OpenAI's OpenAPI spec (`tests/` validates real responses against
it); routes return them and FastAPI serialises them, so field names live here and nowhere else.
"""
