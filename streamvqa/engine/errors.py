"""Engine errors carry a stable code the API maps to an HTTP status."""


class EngineError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
