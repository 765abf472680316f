/* Plain-C complete HMC for 2d phi^4 in the hopping form, one core: the reference of bench_hmc_vs_c.py.
   S = sum_x [-2 kappa phi_x sum_mu phi_{x+mu} + (1 - 2 lambda) phi_x^2 + lambda phi_x^4] (periodic L x L).
   Per trajectory: momenta by Box-Muller (libm) from xoshiro256+, Omelyan 2MN (lambda = 0.1932, lftml's
   default integrator) with n_steps steps, Metropolis on dH; <M^2> and <|M|> measured every `every`.
   Chains one after the other. Usage: hmc_reference L n_chains n_traj n_steps traj_length kappa lambda every */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t s[4] = {0x9E3779B97F4A7C15u, 0xBF58476D1CE4E5B9u, 0x94D049BB133111EBu, 42u};
static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static double uniform(void) { /* xoshiro256+, 53 bits, in (0, 1) */
  uint64_t r = s[0] + s[3], t = s[1] << 17;
  s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t; s[3] = rotl(s[3], 45);
  return ((r >> 11) + 0.5) * 0x1.0p-53;
}
static int L, V;
static double ch, c2, c4;
static inline double f(double p, double nb) { return ch * nb - p * (2 * c2 + 4 * c4 * p * p); }
static void kick(const double *phi, double *pi, double c) { /* pi += c * force, row by row; wrap sites peeled */
  for (int i = 0; i < L; i++) {
    const double *r = phi + i * L, *u = phi + ((i + 1) % L) * L, *d = phi + ((i + L - 1) % L) * L;
    double *q = pi + i * L;
    q[0] += c * f(r[0], u[0] + d[0] + r[1] + r[L - 1]);
    for (int j = 1; j < L - 1; j++) q[j] += c * f(r[j], u[j] + d[j] + r[j + 1] + r[j - 1]);
    q[L - 1] += c * f(r[L - 1], u[L - 1] + d[L - 1] + r[0] + r[L - 2]);
  }
}
static void drift(double *phi, const double *pi, double c) { for (int x = 0; x < V; x++) phi[x] += c * pi[x]; }
static double action(const double *phi) {
  double a = 0;
  for (int i = 0; i < L; i++) {
    const double *r = phi + i * L, *u = phi + ((i + 1) % L) * L;
    for (int j = 0; j < L; j++) { double p = r[j]; a += -ch * p * (u[j] + r[j == L - 1 ? 0 : j + 1]) + c2 * p * p + c4 * p * p * p * p; }
  }
  return a;
}
int main(int argc, char **argv) {
  if (argc != 9) { fprintf(stderr, "usage: %s L n_chains n_traj n_steps traj_length kappa lambda every\n", argv[0]); return 2; }
  L = atoi(argv[1]); V = L * L;
  int n_chains = atoi(argv[2]), n_traj = atoi(argv[3]), n_steps = atoi(argv[4]), every = atoi(argv[8]);
  double eps = atof(argv[5]) / n_steps, kappa = atof(argv[6]), lam = atof(argv[7]), lo = 0.1931833275037836;
  ch = 2 * kappa; c2 = 1 - 2 * lam; c4 = lam;
  double *phi = malloc(V * sizeof(double)), *x1 = malloc(V * sizeof(double)), *pi = malloc(V * sizeof(double));
  long n_acc = 0, n_meas = 0; double m2 = 0, mabs = 0;
  for (int c = 0; c < n_chains; c++) {
    for (int x = 0; x < V; x++) phi[x] = 0.5 * (2 * uniform() - 1);
    double s0 = action(phi);
    for (int t = 0; t < n_traj; t++) {
      double k0 = 0, k1 = 0;
      for (int x = 0; x < V; x += 2) { /* Box-Muller: two normals per pair of uniforms (V is even) */
        double r = sqrt(-2 * log(uniform())), th = 2 * M_PI * uniform();
        pi[x] = r * cos(th); pi[x + 1] = r * sin(th);
      }
      for (int x = 0; x < V; x++) k0 += 0.5 * pi[x] * pi[x];
      memcpy(x1, phi, V * sizeof(double));
      kick(x1, pi, lo * eps);
      for (int i = 0; i < n_steps; i++) {
        drift(x1, pi, 0.5 * eps); kick(x1, pi, (1 - 2 * lo) * eps); drift(x1, pi, 0.5 * eps);
        kick(x1, pi, (i < n_steps - 1 ? 2 * lo : lo) * eps);
      }
      for (int x = 0; x < V; x++) k1 += 0.5 * pi[x] * pi[x];
      double s1 = action(x1), dH = k1 + s1 - k0 - s0;
      if (log(uniform()) < -dH) { memcpy(phi, x1, V * sizeof(double)); s0 = s1; n_acc++; }
      if ((t + 1) % every == 0) {
        double M = 0; for (int x = 0; x < V; x++) M += phi[x];
        M /= V; m2 += M * M; mabs += fabs(M); n_meas++;
      }
    }
  }
  printf("{\"acceptance\": %.4f, \"M2\": %.6g, \"absM\": %.6g, \"site_updates\": %.6g}\n", (double)n_acc / ((double)n_chains * n_traj),
         m2 / n_meas, mabs / n_meas, (double)n_chains * n_traj * (2.0 * n_steps + 1) * V);
  return 0;
}
