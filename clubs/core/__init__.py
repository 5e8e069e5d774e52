"""The only package that talks Matrix: HTTP and E2EE clients, the embedded homeserver, config
loading with located errors, secrets, storage and logging redaction."""
