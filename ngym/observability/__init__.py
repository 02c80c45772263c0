"""What a running gym shows of itself: Prometheus metrics of every server (`/metrics`) and of each vLLM server a
model server sends to."""
