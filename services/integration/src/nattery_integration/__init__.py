"""Nattery integration service."""
