"""Deployment files a team starts a cluster from, generated from Marquee's settings."""
