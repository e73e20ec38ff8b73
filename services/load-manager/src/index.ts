/** The Load Manager service (R-LM), embeddable for tests and jobs. */
export { startLoadManager, validateReport, placementOf, type LoadManagerOptions, type LoadManagerHandle, type MoveRecordView, type Placement } from './load-manager';
export { LoadHistory, type LoadHistoryOptions, type LoadReport, type RecordRefusal } from './history';
