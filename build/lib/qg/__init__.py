"""Korean recommended-question generation: data, EXAONE conversion, LoRA training, evaluation, publishing."""
