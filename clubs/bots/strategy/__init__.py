"""Cohort members' individual communication strategies (on the facilitation bot's account)."""
