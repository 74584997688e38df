"""The host's web page: the render now, the queue, the videos, the users and an
animate form, over the same service as the chat commands, live by server-sent
events; /healthz and /metrics beside it.

| module | holds |
|---|---|
| server.py | `WebSurface`: the server on the bot's loop, the tracker's notifier of "web" |
| app.py | the routes and the guards (session, login, CSRF, security headers) |
| auth.py | sessions in signed cookies, CSRF tokens, the login link, login limits |
| pages.py, actions.py | the screens (GET) and what they change (POST, via `BotService`) |
| live.py, stream.py, regions.py | the live snapshot, its event stream, the live regions |
| views.py | the facts in the page's words, for the templates |
| media.py | a job's pictures, previews and videos |
| health.py, metrics.py | /healthz, /metrics |
| templates/, static/ | Jinja2 templates; our own CSS and JavaScript (no CDN, no build) |
"""
