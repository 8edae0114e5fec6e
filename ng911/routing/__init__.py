"""Queues, answer points, their health, and the choice of who rings next."""
