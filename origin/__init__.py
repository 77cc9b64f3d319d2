"""The origin: every title's encoded files and its catalog entry, on S3 (any S3 API) or a local
directory. `origin.core` decides (MP4 layout, ladder, catalog, manifests) without I/O; the
shell around it runs ffmpeg (`encode`), stores (`backends`), ingests (`ingest`), reads the catalog
(`catalog`), serves HTTP (`server`; file bodies by sendfile in `filebody`) and parses the command
line (`cli`)."""
