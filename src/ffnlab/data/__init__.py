"""Training data: corpora, tokenizers, cached token arrays and deterministic batches."""

from ffnlab.data.corpus import Corpus, Document, load_corpus
from ffnlab.data.tokenizer import CharTokenizer, Tokenizer, get_tokenizer, load_pretrained, train_bpe
from ffnlab.data.tokens import IGNORE, MLMData, TokenData, prepare_data

__all__ = ["IGNORE", "CharTokenizer", "Corpus", "Document", "MLMData", "TokenData", "Tokenizer", "get_tokenizer",
           "load_corpus", "load_pretrained", "prepare_data", "train_bpe"]
