"""Synthetic stand-ins for the FPUS23 images: the phantom renderer and procedural recordings."""
from .phantom import DEFAULT_STYLE, FrameSpec, Style, render, spec_from_frame
from .recordings import RenderJob, annotation_stats, procedural_frames, procedural_stream_names, render_annotations, render_jobs, render_procedural

