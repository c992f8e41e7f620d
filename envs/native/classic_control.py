"""Gymnasium's classic-control environments as batched tensor programs.

Each class follows its Gymnasium original (gymnasium/envs/classic_control/*.py) line by
line, in float64 where Gymnasium computes in float64 and rounding to float32 where
Gymnasium stores float32, so that from the same state and action both give the same next
observation, reward and flags (tests/test_native_envs.py checks this to 1e-5).
State layouts are Gymnasium's `env.unwrapped.state`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from envs.native.base import NativeVectorEnv


def _uniform(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """numpy's Generator.uniform(low, high) from uniforms in [0, 1)."""
    return low + (high - low) * u


class CartPole(NativeVectorEnv):
    """CartPole-v1: state (x, x_dot, theta, theta_dot), explicit Euler, 500-step limit."""

    gym_id = "CartPole-v1"
    reset_draws = 4
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass = masspole + masscart
    polemass_length = masspole * length
    theta_threshold_radians = 12 * 2 * math.pi / 360
    x_threshold = 2.4
    sutton_barto_reward = False  # Gymnasium's option: reward 0 per step, -1 on termination

    def reset_state(self, u):
        return _uniform(u, -0.05, 0.05)

    def step_state(self, state, action):
        x, x_dot, theta, theta_dot = state.unbind(1)
        force = torch.where(action == 1, self.force_mag, -self.force_mag).to(torch.float64)
        costheta, sintheta = torch.cos(theta), torch.sin(theta)
        temp = (force + self.polemass_length * theta_dot.square() * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * costheta.square() / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        terminated = (
            (x < -self.x_threshold)
            | (x > self.x_threshold)
            | (theta < -self.theta_threshold_radians)
            | (theta > self.theta_threshold_radians)
        )
        # Every step scores 1, the terminating one too (the env auto-resets after it).
        reward = (
            torch.where(terminated, -1.0, 0.0).to(torch.float64) if self.sutton_barto_reward else torch.ones_like(x)
        )
        return torch.stack([x, x_dot, theta, theta_dot], 1), reward, terminated

    def set_render_state(self, env, state):
        env.unwrapped.state = state


class Pendulum(NativeVectorEnv):
    """Pendulum-v1: state (theta, theta_dot), never terminates, 200-step limit."""

    gym_id = "Pendulum-v1"
    reset_draws = 2
    max_speed, max_torque, dt, m, length = 8.0, 2.0, 0.05, 1.0, 1.0
    g = 10.0  # gravity, a Gymnasium option

    def reset_state(self, u):
        return torch.stack([_uniform(u[:, 0], -math.pi, math.pi), _uniform(u[:, 1], -1.0, 1.0)], 1)

    def step_state(self, state, action):
        th, thdot = state.unbind(1)
        u = action[:, 0].clamp(-self.max_torque, self.max_torque)  # float32, as in Gymnasium
        angle = torch.remainder(th + math.pi, 2 * math.pi) - math.pi  # angle_normalize
        # Gymnasium's u terms stay float32 (NumPy 2 keeps float32 * Python float in float32).
        costs = angle.square() + 0.1 * thdot.square() + (0.001 * u.square()).to(torch.float64)
        g, m, length, dt = self.g, self.m, self.length, self.dt
        newthdot = thdot + (3 * g / (2 * length) * torch.sin(th) + (3.0 / (m * length**2) * u).to(torch.float64)) * dt
        newthdot = newthdot.clamp(-self.max_speed, self.max_speed)
        newth = th + newthdot * dt
        return torch.stack([newth, newthdot], 1), -costs, torch.zeros_like(th, dtype=torch.bool)

    def observe(self, state):
        theta, thetadot = state.unbind(1)
        return torch.stack([torch.cos(theta), torch.sin(theta), thetadot], 1).to(torch.float32)


def _mountain_car_start(u: torch.Tensor) -> torch.Tensor:
    """Both MountainCars start at rest somewhere in [-0.6, -0.4]."""
    position = _uniform(u[:, 0], -0.6, -0.4)
    return torch.stack([position, torch.zeros_like(position)], 1)


def _mountain_car_move(
    position: torch.Tensor, velocity: torch.Tensor, acceleration: torch.Tensor, goal: float, goal_velocity: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What both MountainCars do after computing the acceleration: cap the speed at 0.07, move,
    stop dead against the left wall at -1.2, and reach the goal at or beyond `goal`; in the
    dtype of the inputs (bounds and goal rounded to it, as NumPy 2 rounds Python floats)."""
    velocity = (velocity + acceleration).clamp(-0.07, 0.07)
    position = (position + velocity).clamp(-1.2, 0.6)
    velocity = torch.where((position == -1.2) & (velocity < 0), 0.0, velocity)
    return position, velocity, (position >= goal) & (velocity >= goal_velocity)


class MountainCar(NativeVectorEnv):
    """MountainCar-v0: state (position, velocity), 3 discrete pushes, 200-step limit."""

    gym_id = "MountainCar-v0"
    reset_draws = 1
    goal_position, force, gravity = 0.5, 0.001, 0.0025
    goal_velocity = 0.0  # a Gymnasium option

    def reset_state(self, u):
        return _mountain_car_start(u)

    def step_state(self, state, action):
        position, velocity = state.unbind(1)
        push = (action - 1).to(torch.float64)
        acceleration = push * self.force + torch.cos(3 * position) * (-self.gravity)
        position, velocity, terminated = _mountain_car_move(
            position, velocity, acceleration, self.goal_position, self.goal_velocity
        )
        return torch.stack([position, velocity], 1), torch.full_like(position, -1.0), terminated

    def set_render_state(self, env, state):
        env.unwrapped.state = (state[0], state[1])


class MountainCarContinuous(NativeVectorEnv):
    """MountainCarContinuous-v0: state (position, velocity) kept in float32 as Gymnasium does,
    a continuous push in [-1, 1], reward 100 at the goal minus 0.1 action^2, 999-step limit."""

    gym_id = "MountainCarContinuous-v0"
    reset_draws = 1
    goal_position, power = 0.45, 0.0015
    goal_velocity = 0.0  # a Gymnasium option

    def reset_state(self, u):
        return _mountain_car_start(u)

    def step_state(self, state, action):
        # Gymnasium keeps this state in float32, and with NumPy 2 its arithmetic (and its goal
        # test) then runs in float32 too; only math.cos computes in double.
        position, velocity = state.to(torch.float32).unbind(1)
        a = action[:, 0]  # float32
        drag = (0.0025 * torch.cos((3 * position).to(torch.float64))).to(torch.float32)
        acceleration = a.clamp(-1.0, 1.0) * self.power - drag
        position, velocity, terminated = _mountain_car_move(
            position, velocity, acceleration, self.goal_position, self.goal_velocity
        )
        reward = terminated.to(torch.float64) * 100.0 - a.to(torch.float64).square() * 0.1
        return torch.stack([position, velocity], 1).to(torch.float64), reward, terminated

    def set_render_state(self, env, state):
        env.unwrapped.state = state.astype(np.float32)


class Acrobot(NativeVectorEnv):
    """Acrobot-v1: state (theta1, theta2, dtheta1, dtheta2), one RK4 step of dt 0.2 per action
    ("book" dynamics), 500-step limit."""

    gym_id = "Acrobot-v1"
    reset_draws = 4
    dt = 0.2
    m1 = m2 = l1 = 1.0
    lc1 = lc2 = 0.5
    I1 = I2 = 1.0
    max_vel_1, max_vel_2 = 4 * math.pi, 9 * math.pi
    g = 9.8

    def reset_state(self, u):
        return _uniform(u, -0.1, 0.1).to(torch.float32).to(torch.float64)  # Gymnasium stores float32

    def _derivatives(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        theta1, theta2, dtheta1, dtheta2 = s.unbind(1)
        m1, m2, l1, lc1, lc2, I1, I2, g = self.m1, self.m2, self.l1, self.lc1, self.lc2, self.I1, self.I2, self.g
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * torch.cos(theta2)) + I1 + I2
        d2 = m2 * (lc2**2 + l1 * lc2 * torch.cos(theta2)) + I2
        phi2 = m2 * lc2 * g * torch.cos(theta1 + theta2 - math.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * torch.sin(theta2)
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * torch.sin(theta2)
            + (m1 * lc1 + m2 * l1) * g * torch.cos(theta1 - math.pi / 2)
            + phi2
        )
        ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * torch.sin(theta2) - phi2) / (
            m2 * lc2**2 + I2 - d2**2 / d1
        )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return torch.stack([dtheta1, dtheta2, ddtheta1, ddtheta2], 1)

    def step_state(self, state, action):
        torque = (action - 1).to(torch.float64)  # AVAIL_TORQUE = [-1, 0, +1]
        dt, dt2 = self.dt, self.dt / 2.0
        k1 = self._derivatives(state, torque)
        k2 = self._derivatives(state + dt2 * k1, torque)
        k3 = self._derivatives(state + dt2 * k2, torque)
        k4 = self._derivatives(state + dt * k3, torque)
        ns = state + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        theta1, theta2, dtheta1, dtheta2 = ns.unbind(1)
        theta1, theta2 = _wrap(theta1, -math.pi, math.pi), _wrap(theta2, -math.pi, math.pi)
        dtheta1 = dtheta1.clamp(-self.max_vel_1, self.max_vel_1)
        dtheta2 = dtheta2.clamp(-self.max_vel_2, self.max_vel_2)
        terminated = -torch.cos(theta1) - torch.cos(theta2 + theta1) > 1.0
        reward = torch.where(terminated, 0.0, -1.0).to(torch.float64)
        return torch.stack([theta1, theta2, dtheta1, dtheta2], 1), reward, terminated

    def observe(self, state):
        s0, s1, s2, s3 = state.unbind(1)
        return torch.stack([torch.cos(s0), torch.sin(s0), torch.cos(s1), torch.sin(s1), s2, s3], 1).to(torch.float32)


def _wrap(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Gymnasium's acrobot `wrap`: shift by whole periods until low <= x <= high."""
    diff = high - low
    above = torch.ceil((x - high) / diff).clamp_min(0)  # subtractions `while x > high`
    below = torch.ceil((low - x) / diff).clamp_min(0)  # additions `while x < low`
    return x - above * diff + below * diff
