"""The origin: every title's encoded files and its catalog entry, on S3 (any S3 API) or a local
directory. `origin.core` decides (ranges, MP4 layout, ladder, catalog, manifests) without I/O; the
shell around it runs ffmpeg (`encode`), stores (`backends`), ingests (`ingest`), reads the catalog
(`catalog`), serves HTTP (`server`) and parses the command line (`cli`)."""
