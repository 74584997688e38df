"""Fakes of the chat platforms, served on loopback so the real client libraries talk to them.

Each fake lives in its own module (``telegram_api``, the Discord ones); importing this
package imports none of them.
"""
