"""The planner's pure core: popularity, copies and rendezvous placement, capacity packing, sources per
file. No I/O, no clock, no aiohttp or boto3: every function takes `today` and data and returns a
verdict, so each rule is a table test. (The agent's pure rules live in oca.fill.core.)"""
