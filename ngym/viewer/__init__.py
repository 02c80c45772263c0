"""`ng_viewer`: a local web page over a rollout file (NeMo Gym's rows), indexed once and read on demand.

rows.py        what the index keeps of one row (status, turns, tokens, the verifier's fields)
index.py       one pass over a JSONL file: line offsets + those facts in compact columns; follows appends
build.py       the first pass over a large file, spread over worker processes
search.py      full-text search over the raw lines
queries.py     the table: filters, sort, pages
stats.py       summary, histograms, pass@k, groups by task, two files compared
conversation.py / tokens.py   one rollout as a conversation, and its tokens (tokenizer.json decoding)
server.py / api.py            the indexes kept up to date, the JSON API and the page (static/)
"""
