"""Function Compute API access: signing, credentials, the HTTP client, models and errors."""
