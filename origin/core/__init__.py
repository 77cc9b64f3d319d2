"""The origin's pure core: MP4 box layout, ladder plans and ffmpeg argv, catalog entries,
playlists and object keys. Nothing here opens a file, a socket or a process; the shell does that with
what the core decides. Playback may import `origin.core` (playlists, catalog) but never the shell."""
