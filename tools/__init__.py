"""Command-line tools of celeba-stream: thin absl entry points over the libraries."""
