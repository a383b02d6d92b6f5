"""Metrics: PSNR, SSIM, LPIPS v0.1 (AlexNet) and its diversity, the representation probe."""

from cgml_jax.metrics.image import psnr, ssim
from cgml_jax.metrics.lpips import (
                                    DIVERSITY_NUM_SAMPLES,
                                    LPIPS,
                                    LPIPS_INPUT_RANGE,
                                    LPIPS_NET,
                                    LPIPS_VERSION,
                                    LpipsMetric,
                                    WeightsNotFoundError,
                                    find_lpips_weights,
                                    load_lpips_params,
                                    prepare_lpips_input,
)
