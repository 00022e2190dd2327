"""`python -m engine models`: where each pretrained model is found, and `--fetch` to download missing ones."""
from .models import MODEL_FILES, find_model


def configure(parser):
    parser.add_argument("--models", help="a folder holding the model files (else $SYNCTALK_MODELS, then the cache)")
    parser.add_argument("--fetch", action="store_true", help="download missing models into the cache")


def run(args, progress):
    return {name: str(find_model(name, args.models, download=args.fetch)) for name in MODEL_FILES}
