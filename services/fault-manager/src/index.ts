/** The Fault Manager service (R-FM), embeddable for tests and jobs. */
export { startFaultManager, type FaultManagerOptions, type FaultManagerHandle } from './fault-manager';
