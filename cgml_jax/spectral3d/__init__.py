"""Spectral maps of 3D shapes for cGML Sec. 5.4: spherical harmonics, 3D Zernike, loaders.

  sph.sh_maps(points)            (S, 1 + shells, L+1, 2L+1) real SH maps of point clouds
  zernike.zernike_maps(points)   (S, N+1, (N+1)^2) 3D Zernike moment maps
  pointcloud.load_modelnet10()   the shared ModelNet10 clouds

See the module docstrings for the math and conventions.
"""

from cgml_jax.spectral3d.pointcloud import (
                                            data_dir,
                                            load_h5,
                                            load_modelnet10,
                                            load_npz,
                                            load_off_folder,
                                            normalize_points,
                                            read_off,
                                            sample_mesh,
)
from cgml_jax.spectral3d.sph import (
                                            default_power,
                                            dh_grid,
                                            grid_directions,
                                            kernel_coeffs,
                                            real_sph_harm,
                                            real_sph_harm_xyz,
                                            sh_evaluate,
                                            sh_forward,
                                            sh_invariants,
                                            sh_inverse,
                                            sh_maps,
                                            sh_to_points,
                                            shell_coeffs,
                                            sphere_functions,
)
from cgml_jax.spectral3d.zernike import (
                                            voxel_centres,
                                            voxelize,
                                            zernike_basis,
                                            zernike_evaluate,
                                            zernike_invariants,
                                            zernike_maps,
                                            zernike_moments,
                                            zernike_moments_voxels,
                                            zernike_radial,
)
