"""The credit ledger's domain: accounts, their events and rules, and the application that runs them.

This package imports nothing else of the service: HTTP, Redis and Stripe live outside it.
"""
