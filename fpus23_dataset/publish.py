"""Upload a build to the Hugging Face Hub as a dataset repository and tag the release."""
from __future__ import annotations

import json
from pathlib import Path


def publish(path: Path | str, repo_id: str, tag: str, *, private: bool = False, token: str | None = None, api=None) -> str:
    """Create (or reuse) the dataset repo, upload the folder in one commit, tag it. Returns the commit URL."""
    path = Path(path)
    marker = path / "build_report.json"
    if not marker.is_file() or not (path / "README.md").is_file():
        raise FileNotFoundError(f"{path}: not an fpus23 build (README.md and build_report.json expected)")
    version = json.loads(marker.read_text())["version"]
    if tag.lstrip("v") != version:
        raise ValueError(f"tag {tag!r} does not match the build's version {version!r}")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(path), repo_id=repo_id, repo_type="dataset",
        commit_message=f"FPUS23 dataset {tag}", allow_patterns=["README.md", "build_report.json", "*/*.parquet"],
    )
    api.create_tag(repo_id, tag=tag, repo_type="dataset", tag_message=f"FPUS23 dataset {tag}")
    return str(getattr(commit, "commit_url", commit))
