"""Upload a build to the Hugging Face Hub as a dataset repository and tag the release."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import NotABuildError, UserError


class PublishError(UserError):
    pass


def publish(path: Path | str, repo_id: str, tag: str, *, private: bool = False, token: str | None = None, api=None) -> str:
    """Create (or reuse) the dataset repo, upload the folder in one commit, tag it. Returns the commit URL."""
    path = Path(path)
    marker = path / "build_report.json"
    if not marker.is_file() or not (path / "README.md").is_file():
        raise NotABuildError(f"{path}: not an fpus23 build (README.md and build_report.json expected)")
    version = json.loads(marker.read_text())["version"]
    if tag.lstrip("v") != version:
        raise PublishError(f"tag {tag!r} does not match the build's version {version!r}: use --tag v{version}, "
                           f"or rebuild with --version")
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(path), repo_id=repo_id, repo_type="dataset", commit_message=f"FPUS23 dataset {tag}",
            allow_patterns=["README.md", "build_report.json", "*/*.parquet"],
        )
        api.create_tag(repo_id, tag=tag, repo_type="dataset", tag_message=f"FPUS23 dataset {tag}")
    except OfflineModeIsEnabled:
        raise PublishError("the Hub is switched off here (HF_HUB_OFFLINE is set): unset it to publish") from None
    except HfHubHTTPError as error:
        raise PublishError(f"the Hub refused the upload to {repo_id}: {str(error).splitlines()[0]} "
                           f"(log in with `hf auth login` or pass a token with write access)") from None
    except (OSError, _transport_errors()) as error:
        raise PublishError(f"could not reach the Hugging Face Hub ({type(error).__name__}: {error}); check the network") from None
    return str(getattr(commit, "commit_url", commit))


def _transport_errors() -> type[Exception]:
    """The HTTP client's network errors (httpx for huggingface_hub 1.x, requests before)."""
    try:
        import httpx

        return httpx.TransportError
    except ImportError:  # pragma: no cover - older huggingface_hub
        import requests

        return requests.RequestException
