"""One exception tree for everything lbproxy raises on purpose."""

from __future__ import annotations


class LbproxyError(Exception):
    """Base of every error lbproxy raises deliberately."""


class ConfigError(LbproxyError):
    """config.yaml (or an override) is invalid; the message names the field."""


class RequestError(LbproxyError):
    """A client's admin request is invalid (``_admin_input``); answered with ``status`` (400
    unless said otherwise) and changes nothing."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ChangeRefusedError(LbproxyError):
    """The controller refused a change of the replicas (/add, /rm); nothing changed.
    ``_admin.py`` says which HTTP status each kind is."""


class ShuttingDownError(ChangeRefusedError):
    """The balancer is shutting down: it changes its replicas no more."""


class FixedReplicasError(ChangeRefusedError):
    """The backend neither starts nor stops replicas (static): their number is fixed."""


class NameTakenError(ChangeRefusedError):
    """An asked-for hostname is used by something outside this balancer."""

    def __init__(self, hostname: str) -> None:
        super().__init__(f"Hostname {hostname!r} is already in use outside this balancer")
        self.hostname = hostname


class NameCheckError(ChangeRefusedError):
    """The backend could not tell whether the asked-for hostnames are free."""


class OrchestratorError(ChangeRefusedError):
    """The orchestrator (Docker Swarm) that keeps the replicas could not be asked or told."""


class KillFailedError(ChangeRefusedError):
    """The backend could not kill a replica (/kill)."""


class BackendError(LbproxyError):
    """A replica backend could not start, find or stop a replica."""


class NameInUseError(BackendError):
    """The replica's hostname is taken by something outside this balancer."""


class UpstreamError(LbproxyError):
    """Talking to a replica failed."""


class UpstreamConnectError(UpstreamError):
    """No connection could be made: nothing was sent, so another replica may be tried."""


class UpstreamTimeoutError(UpstreamError):
    """The replica accepted the request but did not answer in time."""


class UpstreamProtocolError(UpstreamError):
    """The replica broke the exchange after it started (reset, malformed response)."""


class ClientDisconnectedError(LbproxyError):
    """The client went away before its request body was complete: nothing to answer."""


class MalformedRequestError(LbproxyError):
    """A request whose head was valid turned out malformed in its body (a bad chunk, a
    forbidden trailer): the exchange ends at once, with a 400 if nothing was answered yet."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
