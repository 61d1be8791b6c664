"""Notifications leaving the service: signed webhooks and email."""
