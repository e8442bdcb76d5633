"""The SMTP edge: the local outbox and bounce listener (aiosmtpd), and the sender (aiosmtplib)."""
