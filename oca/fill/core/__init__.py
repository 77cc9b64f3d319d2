"""The fill agent's pure core: manifest diff, window, source choice and backoff, token bucket and part
arithmetic. No I/O, no clock, no aiohttp or boto3: every function takes `now` and data and returns a
verdict, so each rule is a table test."""
