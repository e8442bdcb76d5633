"""Distributed marketing, pure: templates and partner values, journeys, approvals, and the
send pipeline's rules. See docs/distributed-marketing.md."""
