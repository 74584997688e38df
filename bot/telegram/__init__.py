"""The bot on Telegram: python-telegram-bot handlers over the platform-neutral service."""
