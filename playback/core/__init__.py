"""Playback's pure core: client address, manifests with pathways, steering manifests, viewing events and
popularity. No aiohttp, asyncio or files here."""
