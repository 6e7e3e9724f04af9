"""One exception type for every problem a user can fix: the CLI prints it as one line."""


class LipbenchError(Exception):
    """A clear, user-facing error: what went wrong and how to fix it."""

    def __init__(self, problem: str, fix: str | None = None):
        # Always one line: a multi-line cause (a YAML parser's report, a traceback tail) is
        # folded, so the CLI prints exactly one `error:` line.
        problem = " ".join(str(problem).split())
        fix = " ".join(fix.split()) if fix else fix
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}" if fix else problem)


class InputError(LipbenchError):
    """Bad user input: text, language, audio, image."""


class WeightsError(LipbenchError):
    """A checkpoint file exists but cannot be used."""


class FaceError(LipbenchError):
    """No usable face in the avatar."""


class TTSError(LipbenchError):
    """Speech synthesis failed."""


class MediaError(LipbenchError):
    """ffmpeg could not read or write a media file."""


def first_sentence(text: str, limit: int = 160) -> str:
    """The first sentence of a message, or its first words up to ``limit`` characters —
    never cut inside a word."""
    end = text.find(". ")
    if 0 < end < limit:
        return text[: end + 1]
    if len(text) <= limit:
        return text
    return text[: text.rfind(" ", 0, limit)].rstrip(" ,;:") + " …"
