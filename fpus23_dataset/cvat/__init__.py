"""CVAT side of the data layer: read and merge exports into Frame records, write exports, find sources."""
from .reader import Box, Frame, UntrustedXMLError, clip_boxes, frame_index, iter_images, make_image_id, read_labels_meta, read_stream
from .sources import IMAGE_SUFFIXES, Source, SourceError, discover, read_source
from .writer import TrackedBox, split_export, write_cvat_xml

