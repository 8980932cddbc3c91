"""Alert delivery to webhooks: bodies per format, Standard Webhooks signatures, POST."""
