"""Serving engines: questions through an OpenAI-compatible server (`openai`), the merged model it loads (`export`)."""
