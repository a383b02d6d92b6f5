"""Data: sources (npz, image folders, TFDS, embedded crops), masks, transforms, grain pipelines."""

from cgml_jax.data import images, masks, transforms
from cgml_jax.data.pipeline import (
                                    checkpoint_args,
                                    iterator_state,
                                    make_iterator,
                                    make_pipeline,
                                    restore_iterator,
                                    steps_per_epoch,
)
from cgml_jax.data.sources import (
                                    ENV_VAR,
                                    LOCAL_DATASETS,
                                    ArraySource,
                                    DataNotFoundError,
                                    EmbeddedImageSource,
                                    ImageFolderSource,
                                    PairedImageFolderSource,
                                    TfdsSource,
                                    load_source,
                                    npz_source,
                                    parse_split,
                                    resolve_data_dir,
                                    split_indices,
)
