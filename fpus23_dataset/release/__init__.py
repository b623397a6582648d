"""Release: read a build back (tables), compare builds (diff), export to COCO, publish to the Hub."""
