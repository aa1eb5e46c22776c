"""Local stand-ins for the outside world: a SendGrid-compatible HTTP server and an SMTP sink."""
