"""The bot on Discord: discord.py slash commands and buttons over the platform-neutral service."""
