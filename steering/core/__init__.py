"""Steering's pure decision core: no aiohttp, asyncio or file I/O. The shell feeds it parsed config,
heartbeats and client addresses and performs what it decides."""
